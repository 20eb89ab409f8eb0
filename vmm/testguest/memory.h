/* Memory helpers the compiler may call, and a bump allocator for rings and
 * buffers (identity-mapped guest RAM, so virtual = physical = DMA address). */
#ifndef TESTGUEST_MEMORY_H
#define TESTGUEST_MEMORY_H

#include "arch.h"

void *memset(void *d, int c, size_t n);
void *memcpy(void *d, const void *s, size_t n);
int memcmp(const void *a, const void *b, size_t n);

/* Zeroed, aligned memory that is never freed; NULL when the arena is full. */
void *alloc(size_t size, size_t align);

static inline u64 phys(const volatile void *p) { return (u64)(uintptr_t)p; }

#endif

#include "memory.h"

#define ARENA_SIZE (4u << 20)

static u8 arena[ARENA_SIZE] __attribute__((aligned(4096)));
static size_t arena_used;

void *memset(void *d, int c, size_t n)
{
	u8 *p = d;
	while (n--)
		*p++ = (u8)c;
	return d;
}

void *memcpy(void *d, const void *s, size_t n)
{
	u8 *p = d;
	const u8 *q = s;
	while (n--)
		*p++ = *q++;
	return d;
}

int memcmp(const void *a, const void *b, size_t n)
{
	const u8 *p = a, *q = b;
	for (size_t i = 0; i < n; i++)
		if (p[i] != q[i])
			return p[i] < q[i] ? -1 : 1;
	return 0;
}

void *alloc(size_t size, size_t align)
{
	size_t start = (arena_used + align - 1) & ~(align - 1);
	if (start > ARENA_SIZE || size > ARENA_SIZE - start)
		return NULL;
	arena_used = start + size;
	/* The arena is in .bss, zeroed at start-up, and never reused. */
	return arena + start;
}

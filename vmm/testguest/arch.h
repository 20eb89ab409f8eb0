/* x86 primitives the CPL3 code uses: port I/O (through the TSS bitmap),
 * MMIO with explicit access widths, barriers, TSC, and the requests to
 * CPL0 that set or clear RFLAGS.IF or reset (entry.S). */
#ifndef TESTGUEST_ARCH_H
#define TESTGUEST_ARCH_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

typedef uint8_t u8;
typedef uint16_t u16;
typedef uint32_t u32;
typedef uint64_t u64;

static inline void outb(u16 port, u8 v) { __asm__ volatile("outb %0, %1" ::"a"(v), "Nd"(port)); }
static inline void outw(u16 port, u16 v) { __asm__ volatile("outw %0, %1" ::"a"(v), "Nd"(port)); }
static inline void outl(u16 port, u32 v) { __asm__ volatile("outl %0, %1" ::"a"(v), "Nd"(port)); }
static inline u8 inb(u16 port)
{
	u8 v;
	__asm__ volatile("inb %1, %0" : "=a"(v) : "Nd"(port));
	return v;
}
static inline u16 inw(u16 port)
{
	u16 v;
	__asm__ volatile("inw %1, %0" : "=a"(v) : "Nd"(port));
	return v;
}
static inline u32 inl(u16 port)
{
	u32 v;
	__asm__ volatile("inl %1, %0" : "=a"(v) : "Nd"(port));
	return v;
}

/* MMIO: one plain MOV of the given width, so the hypervisor's instruction
 * emulator sees a simple access. */
static inline u8 mmio_read8(volatile void *a)
{
	u8 v;
	__asm__ volatile("movb %1, %0" : "=q"(v) : "m"(*(volatile u8 *)a) : "memory");
	return v;
}
static inline u16 mmio_read16(volatile void *a)
{
	u16 v;
	__asm__ volatile("movw %1, %0" : "=r"(v) : "m"(*(volatile u16 *)a) : "memory");
	return v;
}
static inline u32 mmio_read32(volatile void *a)
{
	u32 v;
	__asm__ volatile("movl %1, %0" : "=r"(v) : "m"(*(volatile u32 *)a) : "memory");
	return v;
}
static inline void mmio_write8(volatile void *a, u8 v)
{
	__asm__ volatile("movb %1, %0" : "=m"(*(volatile u8 *)a) : "q"(v) : "memory");
}
static inline void mmio_write16(volatile void *a, u16 v)
{
	__asm__ volatile("movw %1, %0" : "=m"(*(volatile u16 *)a) : "r"(v) : "memory");
}
static inline void mmio_write32(volatile void *a, u32 v)
{
	__asm__ volatile("movl %1, %0" : "=m"(*(volatile u32 *)a) : "r"(v) : "memory");
}

static inline void barrier(void) { __asm__ volatile("" ::: "memory"); }
static inline void mb(void) { __asm__ volatile("mfence" ::: "memory"); }
static inline void cpu_relax(void) { __asm__ volatile("pause" ::: "memory"); }

static inline u64 rdtsc(void)
{
	u32 lo, hi;
	__asm__ volatile("rdtsc" : "=a"(lo), "=d"(hi));
	return ((u64)hi << 32) | lo;
}

static inline void cpuid(u32 leaf, u32 sub, u32 *a, u32 *b, u32 *c, u32 *d)
{
	__asm__ volatile("cpuid" : "=a"(*a), "=b"(*b), "=c"(*c), "=d"(*d) : "a"(leaf), "c"(sub));
}

/* STI/CLI fault at CPL3 and this KVM turns INT n there into #UD, so the
 * requests are "ud2; .byte OP", which the #UD handler serves (entry.S). */
static inline void irq_enable(void) { __asm__ volatile("ud2; .byte 0x01" ::: "memory"); }
static inline void irq_disable(void) { __asm__ volatile("ud2; .byte 0x02" ::: "memory"); }
static inline void wrmsr(u32 msr, u64 v)
{
	__asm__ volatile("ud2; .byte 0x04" ::"c"(msr), "a"((u32)v), "d"((u32)(v >> 32)) : "memory");
}
__attribute__((noreturn)) static inline void machine_reset(void)
{
	__asm__ volatile("ud2; .byte 0x03" ::: "memory");
	__builtin_unreachable();
}

/* Per-vector interrupt counts, bumped by the CPL0 stub (entry.S). */
extern volatile u32 irq_counts[256];

__attribute__((noreturn)) void triple_fault(void);

#endif

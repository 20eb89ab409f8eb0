#include "lapic.h"

#include "console.h"

#define LAPIC_BASE 0xFEE00000u
#define LAPIC_ID 0x20
#define LAPIC_VERSION 0x30
#define LAPIC_TPR 0x80
#define LAPIC_SVR 0xF0
#define LAPIC_LVT_LINT0 0x350
#define LAPIC_SVR_ENABLE 0x100
#define LAPIC_SPURIOUS_VECTOR 0xFF
#define LVT_MASKED 0x10000
#define LVT_EXTINT 0x700

static volatile u8 *reg(u32 off) { return (volatile u8 *)(uintptr_t)(LAPIC_BASE + off); }

void lapic_init(void)
{
	mmio_write32(reg(LAPIC_TPR), 0);
	mmio_write32(reg(LAPIC_LVT_LINT0), LVT_MASKED | LVT_EXTINT);
	mmio_write32(reg(LAPIC_SVR), LAPIC_SVR_ENABLE | LAPIC_SPURIOUS_VECTOR);
	report("lapic id=%u version=0x%x", lapic_id(), mmio_read32(reg(LAPIC_VERSION)));
}

u8 lapic_id(void) { return (u8)(mmio_read32(reg(LAPIC_ID)) >> 24); }

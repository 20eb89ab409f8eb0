/* The local APIC, through its xAPIC MMIO page (mapped for CPL3). */
#ifndef TESTGUEST_LAPIC_H
#define TESTGUEST_LAPIC_H

#include "arch.h"

/* Software-enables the LAPIC (MSIs to a disabled one are dropped), with
 * the PIC's ExtINT line (LINT0) masked so only MSIs arrive. */
void lapic_init(void);
u8 lapic_id(void);

#endif

/* Time from the TSC, for timeouts only (nothing is timed for a verdict). */
#ifndef TESTGUEST_CLOCK_H
#define TESTGUEST_CLOCK_H

#include "arch.h"

void clock_init(void);
u64 clock_ms(void);
/* A deadline `ms` from now, and whether it has passed. */
u64 deadline_after_ms(u64 ms);
bool deadline_passed(u64 deadline);

#endif

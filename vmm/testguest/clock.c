/* TSC frequency: from the command line (tsc.khz=), else CPUID leaf 0x15
 * (crystal ratio), leaf 0x40000010 (hypervisor timing leaf), leaf 0x16
 * (base MHz), else an assumed 2 GHz. */
#include "clock.h"

#include "console.h"
#include "startinfo.h"

static u64 tsc_khz;
static u64 tsc_start;

void clock_init(void)
{
	u32 a, b, c, d;
	const char *source = "assumed";
	u64 khz = cmdline_u64("tsc.khz", 0);
	if (khz) {
		source = "cmdline";
	} else {
		cpuid(0, 0, &a, &b, &c, &d);
		u32 max_leaf = a;
		cpuid(0x40000000, 0, &a, &b, &c, &d);
		u32 max_hv_leaf = (a >= 0x40000000 && a < 0x40000100) ? a : 0;
		if (max_leaf >= 0x15) {
			cpuid(0x15, 0, &a, &b, &c, &d);
			if (a && b && c) {
				khz = (u64)c * b / a / 1000;
				source = "cpuid-0x15";
			}
		}
		if (!khz && max_hv_leaf >= 0x40000010) {
			cpuid(0x40000010, 0, &a, &b, &c, &d);
			if (a) {
				khz = a;
				source = "cpuid-0x40000010";
			}
		}
		if (!khz && max_leaf >= 0x16) {
			cpuid(0x16, 0, &a, &b, &c, &d);
			if (a & 0xFFFF) {
				khz = (u64)(a & 0xFFFF) * 1000;
				source = "cpuid-0x16";
			}
		}
		if (!khz)
			khz = 2000000;
	}
	tsc_khz = khz;
	tsc_start = rdtsc();
	report("tsc khz=%lu source=%s", tsc_khz, source);
}

u64 clock_ms(void) { return (rdtsc() - tsc_start) / tsc_khz; }

u64 deadline_after_ms(u64 ms) { return rdtsc() + ms * tsc_khz; }

bool deadline_passed(u64 deadline) { return (int64_t)(rdtsc() - deadline) >= 0; }

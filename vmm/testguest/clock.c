/* TSC frequency: from the command line (tsc.khz=), else CPUID leaf 0x15
 * (crystal ratio), leaf 0x40000010 (hypervisor timing leaf), KVM's
 * paravirtual clock (its TSC-to-ns scale), leaf 0x16 (base MHz), else an
 * assumed 2 GHz. */
#include "clock.h"

#include "console.h"
#include "memory.h"
#include "startinfo.h"

#define MSR_KVM_SYSTEM_TIME_NEW 0x4b564d01
#define KVM_FEATURE_CLOCKSOURCE2 (1u << 3)

/* struct pvclock_vcpu_time_info, which KVM keeps up to date. */
struct pvclock {
	u32 version;
	u32 pad0;
	u64 tsc_timestamp;
	u64 system_time;
	u32 tsc_to_system_mul;
	int8_t tsc_shift;
	u8 flags;
	u8 pad[2];
};

static struct pvclock kvmclock __attribute__((aligned(64)));
static u64 tsc_khz;
static u64 tsc_start;

static u64 kvmclock_khz(u32 max_hv_leaf)
{
	u32 a, b, c, d;
	cpuid(0x40000000, 0, &a, &b, &c, &d);
	if (max_hv_leaf < 0x40000001 || b != 0x4b4d564b || c != 0x564b4d56 || d != 0x4d)
		return 0; /* not "KVMKVMKVM" */
	cpuid(0x40000001, 0, &a, &b, &c, &d);
	if (!(a & KVM_FEATURE_CLOCKSOURCE2))
		return 0;
	wrmsr(MSR_KVM_SYSTEM_TIME_NEW, phys(&kvmclock) | 1);
	volatile struct pvclock *pv = &kvmclock;
	u32 version, mul;
	int8_t shift;
	do {
		version = pv->version;
		barrier();
		mul = pv->tsc_to_system_mul;
		shift = pv->tsc_shift;
		barrier();
	} while ((version & 1) || version != pv->version);
	if (!mul)
		return 0;
	/* ns = (tsc << shift) * mul >> 32, so kHz = 10^6 * 2^32 / mul >> shift */
	u64 khz = (1000000ull << 32) / mul;
	return shift >= 0 ? khz >> shift : khz << -shift;
}

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
		if (!khz && (khz = kvmclock_khz(max_hv_leaf)))
			source = "kvmclock";
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

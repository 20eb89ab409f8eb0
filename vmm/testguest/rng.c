/* virtio-rng (virtio v1.2, 5.4): one queue of device-writable buffers.
 * Reads rng.bytes (default 64) bytes, polled. */
#include "clock.h"
#include "console.h"
#include "devices.h"
#include "memory.h"
#include "startinfo.h"
#include "virtq.h"

#define RNG_MAX 4096

bool rng_test(struct pci_fn *f)
{
	struct virtio_dev d;
	struct virtq q;
	u32 want = (u32)cmdline_u64("rng.bytes", 64);
	if (want == 0 || want > RNG_MAX)
		want = 64;
	if (!virtio_probe(&d, f, "rng") || !virtio_negotiate(&d, VIRTIO_F_VERSION_1) ||
	    !virtq_setup(&q, &d, 0, 8, VIRTIO_MSI_NO_VECTOR) || !virtio_driver_ok(&d)) {
		report("rng fail setup");
		return false;
	}
	virtq_interrupts(&q, false);
	u8 *buf = alloc(RNG_MAX, 4096);
	u32 got = 0, requests = 0;
	u64 deadline = deadline_after_ms(5000);
	while (got < want) {
		struct vbuf in = {buf + got, want - got};
		virtq_add(&q, NULL, 0, &in, 1, buf);
		virtq_kick(&q);
		requests++;
		u32 len = 0;
		while (!virtq_get(&q, &len)) {
			if (deadline_passed(deadline)) {
				report("rng fail timeout bytes=%u/%u status=0x%x", got, want, virtio_status(&d));
				virtio_reset(&d);
				return false;
			}
			cpu_relax();
		}
		if (len > want - got) {
			report("rng fail device wrote %u bytes into a %u-byte buffer", len, want - got);
			virtio_reset(&d);
			return false;
		}
		got += len;
	}
	bool all_zero = true;
	for (u32 i = 0; i < got; i++)
		all_zero &= buf[i] == 0;
	char hex[33];
	static const char digits[] = "0123456789abcdef";
	u32 n = got < 16 ? got : 16;
	for (u32 i = 0; i < n; i++) {
		hex[2 * i] = digits[buf[i] >> 4];
		hex[2 * i + 1] = digits[buf[i] & 15];
	}
	hex[2 * n] = 0;
	virtio_reset(&d);
	if (all_zero) {
		report("rng fail bytes=%u all zero", got);
		return false;
	}
	report("rng ok bytes=%u requests=%u first=%s", got, requests, hex);
	return true;
}

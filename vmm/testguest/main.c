/* Sfera test guest: what runs at CPL3 after entry.S, and the fault report. */
#include "arch.h"
#include "clock.h"
#include "console.h"
#include "devices.h"
#include "lapic.h"
#include "pci.h"
#include "startinfo.h"
#include "virtio.h"

#define I8042_COMMAND 0x64
#define I8042_RESET 0xFE

__attribute__((noreturn)) static void power_off(void)
{
	/* The VMM (and QEMU with -no-reboot) ends the VM on a CPU reset. A
	 * machine without an i8042 (QEMU microvm) ignores the write: then
	 * reset by triple fault, which -no-reboot also turns into an exit. */
	outb(I8042_COMMAND, I8042_RESET);
	u64 deadline = deadline_after_ms(100);
	while (!deadline_passed(deadline))
		cpu_relax();
	machine_reset();
}

static const char *type_name(u16 type)
{
	switch (type) {
	case VIRTIO_ID_NET:
		return "net";
	case VIRTIO_ID_BLOCK:
		return "blk";
	case VIRTIO_ID_RNG:
		return "rng";
	default:
		return "other";
	}
}

static struct pci_fn functions[PCI_MAX_FUNCTIONS];

/* fault=pf|ud: fail on purpose, for tests of how a VMM reports a guest
 * that faults (the handler prints, then triple-faults). */
static void provoke_fault(void)
{
	if (cmdline_is("fault", "pf", "")) {
		report("provoking a page fault");
		(void)*(volatile u64 *)0x100000000ull; /* above the 4 GiB mapped */
	}
	if (cmdline_is("fault", "ud", "")) {
		report("provoking an invalid opcode");
		__asm__ volatile("ud2; .byte 0xEE");
	}
}

__attribute__((noreturn)) void guest_main(u64 start_info);
void guest_main(u64 start_info)
{
	console_init();
	report("start");
	bool ok = startinfo_report(start_info);
	clock_init();
	provoke_fault();
	lapic_init();

	int n = pci_scan(functions, PCI_MAX_FUNCTIONS);
	int found[3] = {0, 0, 0}; /* rng, blk, net */
	bool tested[3] = {false, false, false};
	for (int i = 0; i < n; i++) {
		struct pci_fn *f = &functions[i];
		u16 vt = virtio_pci_type(f);
		report("pci 00:%02x.%x %04x:%04x class=%02x%02x subsys=%04x:%04x%s%s", f->dev, f->fn, f->vendor,
		       f->device, f->class_code, f->subclass, f->subsys_vendor, f->subsys_id, vt ? " virtio-" : "",
		       vt ? type_name(vt) : "");
		for (int b = 0; b < 6; b++)
			if (f->bar[b].size)
				report("pci 00:%02x.%x bar%d %s 0x%lx size=0x%lx", f->dev, f->fn, b,
				       f->bar[b].io ? "io" : (f->bar[b].is64 ? "mem64" : "mem32"), f->bar[b].addr,
				       f->bar[b].size);
	}
	/* Each kind once: the first device of its type. */
	for (int i = 0; i < n; i++) {
		struct pci_fn *f = &functions[i];
		switch (virtio_pci_type(f)) {
		case VIRTIO_ID_RNG:
			if (!found[0]++) {
				tested[0] = true;
				ok &= rng_test(f);
			}
			break;
		case VIRTIO_ID_BLOCK:
			if (!found[1]++) {
				tested[1] = true;
				ok &= blk_test(f);
			}
			break;
		case VIRTIO_ID_NET:
			if (!found[2]++) {
				tested[2] = true;
				ok &= net_test(f);
			}
			break;
		}
	}
	static const char *const kinds[3] = {"rng", "blk", "net"};
	for (int k = 0; k < 3; k++) {
		if (!tested[k] && cmdline_list_has("require", kinds[k])) {
			report("%s fail required device not found", kinds[k]);
			ok = false;
		}
	}
	report("done status=%s", ok ? "ok" : "fail");
	power_off();
}

/* Registers as entry.S pushes them (lowest address first). */
struct fault_frame {
	u64 r15, r14, r13, r12, r11, r10, r9, r8, rbp, rdi, rsi, rdx, rcx, rbx, rax;
	u64 vector, error, rip, cs, rflags, rsp, ss;
};

/* Runs at CPL0 on the fault's stack; entry.S triple-faults after it. */
void fault_report(const struct fault_frame *f, u64 cr2);
void fault_report(const struct fault_frame *f, u64 cr2)
{
	report("fault vector=%lu error=0x%lx rip=0x%lx cs=0x%lx rflags=0x%lx rsp=0x%lx ss=0x%lx cr2=0x%lx", f->vector,
	       f->error, f->rip, f->cs, f->rflags, f->rsp, f->ss, cr2);
	report("fault rax=0x%lx rbx=0x%lx rcx=0x%lx rdx=0x%lx rsi=0x%lx rdi=0x%lx rbp=0x%lx", f->rax, f->rbx, f->rcx,
	       f->rdx, f->rsi, f->rdi, f->rbp);
	report("done status=fail");
}

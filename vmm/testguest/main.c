/* Sfera test guest: what runs at CPL3 after entry.S, and the fault report. */
#include "arch.h"
#include "clock.h"
#include "console.h"
#include "startinfo.h"

#define I8042_COMMAND 0x64
#define I8042_RESET 0xFE

__attribute__((noreturn)) static void power_off(void)
{
	/* The VMM (and QEMU with -no-reboot) ends the VM on a CPU reset. A
	 * machine without an i8042 (QEMU microvm) ignores the write: then
	 * reset by triple fault, which -no-reboot also turns into an exit. */
	outb(I8042_COMMAND, I8042_RESET);
	u64 deadline = deadline_after_ms(1000);
	while (!deadline_passed(deadline))
		cpu_relax();
	__asm__ volatile("int $0x82");
	for (;;)
		cpu_relax();
}

__attribute__((noreturn)) void guest_main(u64 start_info);
void guest_main(u64 start_info)
{
	console_init();
	report("start");
	bool ok = startinfo_report(start_info);
	clock_init();
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

/*
 * Sfera's start-up probe guest: writes one console line at its very first
 * instructions and ends the VM, so that a hypervisor's start-up time (exec
 * to first console byte) is the VMM's own, not the guest's.
 *
 * It enters like the test guest (PVH, 32-bit protected mode, paging off)
 * and does everything there: on this machine's paravirtual KVM that is CPL0
 * code, emulated at ~1 M instructions/s, but the first byte goes out at the
 * third instruction (one port-I/O exit, ~23 µs, shared/PVM.md) and the
 * whole probe is about 60 instructions. Reaching CPL3 first would cost
 * another ~26 emulated instructions (test guest's entry.S) before the
 * first byte and measure nothing about the VMM.
 *
 * The line is "SFERA-FIRSTBYTE\n". Then it powers off the way the test
 * guest does: i8042 reset (0xFE to port 0x64; sfera-vmm and QEMU -M pc end
 * there), and where there is no i8042 (QEMU microvm) a triple fault: a
 * zero-limit IDT and ud2 (#UD, no IDT: #GP, #DF, shutdown; QEMU with
 * -no-reboot exits).
 */

	.section .note.Xen, "a", @note
	.balign 4
	.long 4
	.long 8
	.long 18			/* XEN_ELFNOTE_PHYS32_ENTRY */
	.asciz "Xen"
	.balign 4
	.quad pvh_start32

	.section .text.boot, "ax"
	.code32
	.globl pvh_start32
pvh_start32:
	mov	$0x3F8, %edx		/* COM1 THR */
	mov	$'S', %al
	outb	%al, %dx		/* the first byte */
	mov	$line + 1, %esi
1:	movb	(%esi), %al
	test	%al, %al
	jz	2f
	outb	%al, %dx
	inc	%esi
	jmp	1b
2:	mov	$0xFE, %al		/* i8042: pulse the reset line */
	outb	%al, $0x64
	lidt	null_idt
3:	ud2
	jmp	3b

	.section .rodata
line:
	.asciz "SFERA-FIRSTBYTE\n"
	.balign 8
null_idt:
	.word 0
	.long 0

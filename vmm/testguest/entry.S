/*
 * Sfera test guest: PVH entry, the CPL0 part, and the static CPU tables.
 *
 * A PVH loader enters pvh_start32 in 32-bit protected mode, paging off,
 * %ebx = physical address of struct hvm_start_info. On this machine's
 * paravirtual KVM every CPL0 instruction is emulated (~1 M/s), so all tables
 * (page tables, GDT, TSS with its I/O bitmap, IDT) are built at link time and
 * the CPL0 path is about twenty instructions: load them, enter long mode,
 * iretq to CPL3 with RFLAGS.IF=0. Only the interrupt stubs run at CPL0 again.
 */

#define KERNEL_CS	0x10
#define USER_DS		0x2b
#define USER_CS		0x33
#define TSS_SEL		0x40
#define LAPIC_EOI	0xFEE000B0

/* Vectors with a CPU-pushed error code. */
#define HAS_ERROR_CODE(v) ((v) == 8 || ((v) >= 10 && (v) <= 14) || (v) == 17 || (v) == 21 || (v) == 29 || (v) == 30)

/* Requests from CPL3 to CPL0: "ud2; .byte OP". This machine's KVM raises
 * #UD for INT n at CPL3, and STI/CLI fault there (IOPL 0), so the #UD
 * handler recognises the marker, does OP and steps over it. */
#define OP_IRQ_ON	0x01	/* set RFLAGS.IF */
#define OP_IRQ_OFF	0x02	/* clear RFLAGS.IF */
#define OP_RESET	0x03	/* triple-fault: reset the machine */
#define OP_WRMSR	0x04	/* WRMSR with the caller's ECX, EDX:EAX */

/* ---- PVH note: XEN_ELFNOTE_PHYS32_ENTRY (18), 8-byte descriptor as Linux
 * emits it (QEMU reads a size_t there). */
	.section .note.Xen, "a", @note
	.balign 4
	.long 4
	.long 8
	.long 18
	.asciz "Xen"
	.balign 4
	.quad pvh_start32

/* ---- CPL0 entry ---- */
	.section .text.boot, "ax"
	.code32
	.globl pvh_start32
pvh_start32:
	mov	$kstack_top, %esp
	lgdt	gdt_ptr
	mov	$0x620, %eax		/* CR4: PAE, OSFXSR, OSXMMEXCPT */
	mov	%eax, %cr4
	mov	$pml4, %eax
	mov	%eax, %cr3
	mov	$0xC0000080, %ecx	/* EFER.LME */
	mov	$0x100, %eax
	xor	%edx, %edx
	wrmsr
	mov	$0x80050033, %eax	/* CR0: PG, AM, WP, NE, ET, MP, PE */
	mov	%eax, %cr0
	ljmp	$KERNEL_CS, $long_mode

	.code64
long_mode:
	lidt	idt_ptr(%rip)
	mov	$TSS_SEL, %ax
	ltr	%ax
	mov	$USER_DS, %ax
	mov	%ax, %ds
	mov	%ax, %es
	pushq	$USER_DS		/* SS */
	pushq	$ustack_top		/* RSP */
	pushq	$0x2			/* RFLAGS: IF=0, IOPL=0 */
	pushq	$USER_CS		/* CS */
	pushq	$user_start		/* RIP */
	mov	%ebx, %edi		/* hvm_start_info, zero-extended */
	iretq

/* ---- CPL3 from here on ---- */
	.text
user_start:
	mov	%rdi, %r12
	lea	__bss_start(%rip), %rdi
	lea	__bss_end(%rip), %rcx
	sub	%rdi, %rcx
	shr	$3, %rcx
	xor	%eax, %eax
	rep stosq
	mov	%r12, %rdi
	call	guest_main
	ud2

/* ---- Interrupt stubs: 16 bytes each, so the IDT can be static ---- */
	.section .text.isr, "ax"
	.balign 16
	.globl isr_stubs
isr_stubs:
	.set vec, 0
	.rept 256
	.balign 16
	.if HAS_ERROR_CODE(vec)
	.else
	pushq	$0
	.endif
	pushq	$vec
	jmp	isr_common
	.set vec, vec + 1
	.endr

	.text
/* Stack: rax, vector, error, rip, cs, rflags, rsp, ss. */
isr_common:
	push	%rax
	mov	8(%rsp), %rax
	cmp	$6, %eax
	je	isr_ud
	cmp	$32, %eax
	jb	isr_fault
	incl	irq_counts(,%rax,4)
	cmp	$0xFF, %eax		/* LAPIC spurious vector: no EOI */
	je	1f
	mov	$LAPIC_EOI, %eax
	movl	$0, (%rax)
1:	pop	%rax
	add	$16, %rsp
	iretq

isr_ud:
	testb	$3, 32(%rsp)		/* from CPL3 only */
	jz	isr_fault
	mov	24(%rsp), %rax		/* rip */
	cmpw	$0x0B0F, (%rax)
	jne	isr_fault
	movzbl	2(%rax), %eax
	cmp	$OP_IRQ_ON, %eax
	je	1f
	cmp	$OP_IRQ_OFF, %eax
	je	2f
	cmp	$OP_RESET, %eax
	je	triple_fault
	cmp	$OP_WRMSR, %eax
	jne	isr_fault
	mov	(%rsp), %rax
	wrmsr
	jmp	3f
1:	orq	$0x200, 40(%rsp)
	jmp	3f
2:	andq	$~0x200, 40(%rsp)
3:	addq	$3, 24(%rsp)
	pop	%rax
	add	$16, %rsp
	iretq

/* An exception: save everything, let C print it, then triple-fault. */
isr_fault:
	push	%rbx
	push	%rcx
	push	%rdx
	push	%rsi
	push	%rdi
	push	%rbp
	push	%r8
	push	%r9
	push	%r10
	push	%r11
	push	%r12
	push	%r13
	push	%r14
	push	%r15
	mov	%rsp, %rdi
	mov	%cr2, %rsi
	call	fault_report
	/* fall through */
	.globl triple_fault
triple_fault:
	lidt	null_idt_ptr(%rip)
	/* A #GP (non-canonical address) with no IDT: #DF, then shutdown.
	 * (INT3 would do, but this KVM's CPL0 emulator cannot run it.) */
	movabs	$0x8000000000000000, %rax
	mov	(%rax), %rax
	jmp	triple_fault

/* ---- Tables ---- */
	.section .data.pagetables, "aw"
	.balign 4096
/* Identity map of the low 4 GiB in 2 MiB pages, all user-accessible (the
 * guest's work runs at CPL3). 0-3 GiB write-back (RAM); 3-4 GiB uncached
 * (PCI BARs, IOAPIC, LAPIC). Accessed/dirty preset. */
pml4:
	.quad	pdpt + 0x27
	.fill	511, 8, 0
pdpt:
	.quad	pd + 0x0000 + 0x27
	.quad	pd + 0x1000 + 0x27
	.quad	pd + 0x2000 + 0x27
	.quad	pd + 0x3000 + 0x27
	.fill	508, 8, 0
pd:
	.set addr, 0
	.rept 1536
	.quad	addr + 0xE7		/* P RW US A D PS */
	.set addr, addr + 0x200000
	.endr
	.rept 512
	.quad	addr + 0xFF		/* P RW US PWT PCD A D PS */
	.set addr, addr + 0x200000
	.endr

	.data
	.balign 16
gdt:
	.quad	0
	.quad	0
	.quad	0x00AF9B000000FFFF	/* 0x10 kernel code, 64-bit */
	.quad	0x00CF93000000FFFF	/* 0x18 kernel data */
	.quad	0
	.quad	0x00CFF3000000FFFF	/* 0x28 user data (0x2b) */
	.quad	0x00AFFB000000FFFF	/* 0x30 user code, 64-bit (0x33) */
	.quad	0
	/* 0x40: 64-bit available TSS */
	.short	tss_end - tss - 1
	.short	tss_lo
	.byte	tss_mid
	.byte	0x89
	.byte	0
	.byte	tss_hi
	.long	0
	.long	0
gdt_end:

	.balign 8
gdt_ptr:
	.short	gdt_end - gdt - 1
	.quad	gdt

idt_ptr:
	.short	idt_end - idt - 1
	.quad	idt

null_idt_ptr:
	.short	0
	.quad	0

	.balign 16
idt:
	.set vec, 0
	.rept 256
	.short	isr_stubs_lo + 16 * vec
	.short	KERNEL_CS
	.byte	0
	.byte	0x8E			/* interrupt gate, DPL0 */
	.short	isr_stubs_mid
	.long	0
	.long	0
	.set vec, vec + 1
	.endr
idt_end:

	.balign 16
	.globl tss
tss:
	.long	0
	.quad	kstack_top		/* RSP0 */
	.quad	0, 0			/* RSP1, RSP2 */
	.quad	0
	.quad	0, 0, 0, 0, 0, 0, 0	/* IST1-7 */
	.quad	0
	.short	0
	.short	iomap - tss
/* I/O permission bitmap: CPL3 may use COM1 (0x3F8-0x3FF), the i8042
 * command port (0x64) and PCI conf1 (0xCF8-0xCFF). Ports past the end are
 * denied by the TSS limit. */
iomap:
	.fill	12, 1, 0xFF		/* 0x000-0x05F */
	.byte	0xEF			/* 0x060-0x067: 0x64 */
	.fill	127 - 13, 1, 0xFF	/* 0x068-0x3F7 */
	.byte	0x00			/* 0x3F8-0x3FF */
	.fill	415 - 128, 1, 0xFF	/* 0x400-0xCF7 */
	.byte	0x00			/* 0xCF8-0xCFF */
	.byte	0xFF			/* required terminator */
tss_end:

	.globl irq_counts
	.balign 64
irq_counts:
	.fill	256, 4, 0

	.section .stack, "aw", @nobits
	.balign 4096
	.skip	16384
kstack_top:
	.skip	65536
ustack_top:

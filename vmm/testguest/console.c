/* COM1 (8250/16550 at 0x3F8), polled. Every port access is a VM exit
 * (~23 us here), so bytes go out 16 at a time per "transmitter empty". */
#include "console.h"

#define COM1 0x3F8
#define UART_THR 0
#define UART_IER 1
#define UART_FCR 2
#define UART_LCR 3
#define UART_MCR 4
#define UART_LSR 5
#define UART_DLL 0
#define UART_DLM 1
#define LSR_THRE 0x20
#define FIFO_DEPTH 16

void console_init(void)
{
	outb(COM1 + UART_IER, 0x00);
	outb(COM1 + UART_LCR, 0x80); /* DLAB */
	outb(COM1 + UART_DLL, 0x01); /* 115200 */
	outb(COM1 + UART_DLM, 0x00);
	outb(COM1 + UART_LCR, 0x03); /* 8N1 */
	outb(COM1 + UART_FCR, 0x07); /* FIFO on, both cleared */
	outb(COM1 + UART_MCR, 0x03); /* DTR, RTS */
}

static void wait_thre(void)
{
	/* Bounded: a missing UART reads 0xFF (THRE set) anyway; a stuck one
	 * must not hang the guest. */
	for (u32 i = 0; i < 1000000; i++) {
		if (inb(COM1 + UART_LSR) & LSR_THRE)
			return;
		cpu_relax();
	}
}

static void put_byte(char c, unsigned *room)
{
	if (*room == 0) {
		wait_thre();
		*room = FIFO_DEPTH;
	}
	outb(COM1 + UART_THR, (u8)c);
	(*room)--;
}

void console_write(const char *s, size_t len)
{
	unsigned room = 0;
	for (size_t i = 0; i < len; i++) {
		if (s[i] == '\n')
			put_byte('\r', &room);
		put_byte(s[i], &room);
	}
}

struct out {
	char *buf;
	size_t size;
	size_t len;
};

static void emit(struct out *o, char c)
{
	if (o->len + 1 < o->size)
		o->buf[o->len] = c;
	o->len++;
}

static void emit_number(struct out *o, u64 v, unsigned base, bool upper, bool neg, int width, char pad)
{
	char tmp[24];
	int n = 0;
	const char *digits = upper ? "0123456789ABCDEF" : "0123456789abcdef";
	do {
		tmp[n++] = digits[v % base];
		v /= base;
	} while (v);
	if (neg)
		tmp[n++] = '-';
	if (neg && pad == '0') {
		/* "-0012": the sign goes before the zeros */
		emit(o, '-');
		n--;
		width--;
	}
	for (int i = n; i < width; i++)
		emit(o, pad);
	while (n)
		emit(o, tmp[--n]);
}

size_t format(char *buf, size_t size, const char *fmt, va_list ap)
{
	struct out o = {buf, size, 0};
	for (const char *p = fmt; *p; p++) {
		if (*p != '%') {
			emit(&o, *p);
			continue;
		}
		p++;
		char pad = ' ';
		int width = 0, prec = -1, lng = 0;
		if (*p == '0') {
			pad = '0';
			p++;
		}
		while (*p >= '0' && *p <= '9')
			width = width * 10 + (*p++ - '0');
		if (*p == '.') {
			p++;
			if (*p == '*') {
				prec = va_arg(ap, int);
				p++;
			} else {
				prec = 0;
				while (*p >= '0' && *p <= '9')
					prec = prec * 10 + (*p++ - '0');
			}
		}
		while (*p == 'l' || *p == 'z' || *p == 'h') {
			if (*p != 'h')
				lng++;
			p++;
		}
		switch (*p) {
		case 's': {
			const char *s = va_arg(ap, const char *);
			if (!s)
				s = "(null)";
			int n = 0;
			while (s[n] && (prec < 0 || n < prec))
				n++;
			for (int i = n; i < width; i++)
				emit(&o, ' ');
			for (int i = 0; i < n; i++)
				emit(&o, s[i]);
			break;
		}
		case 'c':
			emit(&o, (char)va_arg(ap, int));
			break;
		case 'd':
		case 'i': {
			int64_t v = lng ? va_arg(ap, int64_t) : va_arg(ap, int);
			bool neg = v < 0;
			emit_number(&o, neg ? (u64)(-(v + 1)) + 1 : (u64)v, 10, false, neg, width, pad);
			break;
		}
		case 'u':
		case 'x':
		case 'X': {
			u64 v = lng ? va_arg(ap, u64) : va_arg(ap, unsigned);
			emit_number(&o, v, *p == 'u' ? 10 : 16, *p == 'X', false, width, pad);
			break;
		}
		case 'p':
			emit(&o, '0');
			emit(&o, 'x');
			emit_number(&o, (u64)(uintptr_t)va_arg(ap, void *), 16, false, false, 0, ' ');
			break;
		case '%':
			emit(&o, '%');
			break;
		case 0:
			p--;
			break;
		default:
			emit(&o, '%');
			emit(&o, *p);
		}
	}
	if (size)
		buf[o.len < size ? o.len : size - 1] = 0;
	return o.len;
}

void console_vprintf(const char *fmt, va_list ap)
{
	char buf[512];
	size_t n = format(buf, sizeof(buf), fmt, ap);
	if (n >= sizeof(buf))
		n = sizeof(buf) - 1;
	console_write(buf, n);
}

void console_printf(const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	console_vprintf(fmt, ap);
	va_end(ap);
}

void report(const char *fmt, ...)
{
	char buf[512];
	static const char prefix[] = "SFERA-TESTGUEST ";
	size_t n = sizeof(prefix) - 1;
	for (size_t i = 0; i < n; i++)
		buf[i] = prefix[i];
	va_list ap;
	va_start(ap, fmt);
	size_t m = format(buf + n, sizeof(buf) - n - 1, fmt, ap);
	va_end(ap);
	if (m > sizeof(buf) - n - 2)
		m = sizeof(buf) - n - 2;
	n += m;
	buf[n++] = '\n';
	console_write(buf, n);
}

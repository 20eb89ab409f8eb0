/* The serial console: COM1 8250 polled, and a small printf. */
#ifndef TESTGUEST_CONSOLE_H
#define TESTGUEST_CONSOLE_H

#include <stdarg.h>

#include "arch.h"

void console_init(void);
void console_write(const char *s, size_t len);
void console_printf(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
void console_vprintf(const char *fmt, va_list ap);

/* One report line: "SFERA-TESTGUEST " + text + "\n". */
void report(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

size_t format(char *buf, size_t size, const char *fmt, va_list ap);

#endif

/* PVH start info: memory map, command line, modules. All of it sits in
 * guest RAM below 3 GiB, which the page tables map for CPL3. */
#include "startinfo.h"

#include "console.h"

#define MAPPED_LIMIT 0xC0000000ull
#define CMDLINE_MAX 1024
#define MEMMAP_MAX 128

static char cmdline[CMDLINE_MAX];

static bool mapped(u64 paddr, u64 len) { return paddr < MAPPED_LIMIT && len <= MAPPED_LIMIT - paddr; }

bool startinfo_report(u64 paddr)
{
	if (!paddr || !mapped(paddr, sizeof(struct hvm_start_info))) {
		report("startinfo bad address 0x%lx", paddr);
		return false;
	}
	const struct hvm_start_info *si = (const void *)(uintptr_t)paddr;
	if (si->magic != HVM_START_MAGIC) {
		report("startinfo bad magic 0x%x at 0x%lx", si->magic, paddr);
		return false;
	}
	report("startinfo at 0x%lx version=%u flags=0x%x modules=%u rsdp=0x%lx", paddr, si->version, si->flags,
	       si->nr_modules, si->rsdp_paddr);

	if (si->version >= 1 && si->memmap_paddr && si->memmap_entries) {
		u32 n = si->memmap_entries;
		if (n > MEMMAP_MAX || !mapped(si->memmap_paddr, (u64)n * sizeof(struct hvm_memmap_entry))) {
			report("memmap bad table 0x%lx entries=%u", si->memmap_paddr, n);
			return false;
		}
		const struct hvm_memmap_entry *e = (const void *)(uintptr_t)si->memmap_paddr;
		for (u32 i = 0; i < n; i++)
			report("memmap 0x%016lx 0x%016lx %u", e[i].addr, e[i].addr + e[i].size, e[i].type);
	} else {
		report("memmap none");
	}

	if (si->nr_modules && si->modlist_paddr &&
	    mapped(si->modlist_paddr, (u64)si->nr_modules * sizeof(struct hvm_modlist_entry))) {
		const struct hvm_modlist_entry *m = (const void *)(uintptr_t)si->modlist_paddr;
		for (u32 i = 0; i < si->nr_modules && i < 16; i++)
			report("module 0x%lx size=%lu", m[i].paddr, m[i].size);
	}

	if (si->cmdline_paddr && mapped(si->cmdline_paddr, 1)) {
		const char *src = (const char *)(uintptr_t)si->cmdline_paddr;
		size_t i = 0;
		while (i < CMDLINE_MAX - 1 && mapped(si->cmdline_paddr + i, 1) && src[i]) {
			cmdline[i] = src[i];
			i++;
		}
		cmdline[i] = 0;
	}
	report("cmdline %s", cmdline);
	return true;
}

static bool is_space(char c) { return c == ' ' || c == '\t' || c == '\n'; }

bool cmdline_get(const char *key, const char **val, size_t *len)
{
	size_t klen = 0;
	while (key[klen])
		klen++;
	const char *p = cmdline;
	while (*p) {
		while (is_space(*p))
			p++;
		const char *word = p;
		while (*p && !is_space(*p))
			p++;
		size_t wlen = (size_t)(p - word);
		if (wlen > klen && word[klen] == '=') {
			size_t i = 0;
			while (i < klen && word[i] == key[i])
				i++;
			if (i == klen) {
				*val = word + klen + 1;
				*len = wlen - klen - 1;
				return true;
			}
		}
	}
	return false;
}

u64 cmdline_u64(const char *key, u64 dflt)
{
	const char *v;
	size_t len;
	if (!cmdline_get(key, &v, &len) || len == 0)
		return dflt;
	u64 x = 0;
	size_t i = 0;
	unsigned base = 10;
	if (len > 2 && v[0] == '0' && (v[1] == 'x' || v[1] == 'X')) {
		base = 16;
		i = 2;
	}
	for (; i < len; i++) {
		char c = v[i];
		unsigned d;
		if (c >= '0' && c <= '9')
			d = (unsigned)(c - '0');
		else if (base == 16 && c >= 'a' && c <= 'f')
			d = (unsigned)(c - 'a' + 10);
		else if (base == 16 && c >= 'A' && c <= 'F')
			d = (unsigned)(c - 'A' + 10);
		else {
			report("cmdline %s: bad number, using %lu", key, dflt);
			return dflt;
		}
		x = x * base + d;
	}
	return x;
}

static bool word_eq(const char *a, size_t alen, const char *b)
{
	size_t i = 0;
	while (i < alen && b[i] && a[i] == b[i])
		i++;
	return i == alen && b[i] == 0;
}

bool cmdline_is(const char *key, const char *want, const char *dflt)
{
	const char *v;
	size_t len;
	if (!cmdline_get(key, &v, &len)) {
		v = dflt;
		len = 0;
		while (dflt[len])
			len++;
	}
	return word_eq(v, len, want);
}

bool cmdline_list_has(const char *key, const char *item)
{
	const char *v;
	size_t len;
	if (!cmdline_get(key, &v, &len))
		return false;
	size_t start = 0;
	for (size_t i = 0; i <= len; i++) {
		if (i == len || v[i] == ',') {
			if (word_eq(v + start, i - start, item))
				return true;
			start = i + 1;
		}
	}
	return false;
}

/* The PVH start info (Xen's struct hvm_start_info) and the command line. */
#ifndef TESTGUEST_STARTINFO_H
#define TESTGUEST_STARTINFO_H

#include "arch.h"

#define HVM_START_MAGIC 0x336ec578

struct hvm_start_info {
	u32 magic;
	u32 version;
	u32 flags;
	u32 nr_modules;
	u64 modlist_paddr;
	u64 cmdline_paddr;
	u64 rsdp_paddr;
	/* version 1 and later */
	u64 memmap_paddr;
	u32 memmap_entries;
	u32 reserved;
};

struct hvm_memmap_entry {
	u64 addr;
	u64 size;
	u32 type;
	u32 reserved;
};

struct hvm_modlist_entry {
	u64 paddr;
	u64 size;
	u64 cmdline_paddr;
	u64 reserved;
};

/* Prints what the start info holds; false if it is not a valid one. */
bool startinfo_report(u64 paddr);

/* The command line: space-separated key=value words. */
bool cmdline_get(const char *key, const char **val, size_t *len);
u64 cmdline_u64(const char *key, u64 dflt);
bool cmdline_is(const char *key, const char *want, const char *dflt);
bool cmdline_list_has(const char *key, const char *item);

#endif

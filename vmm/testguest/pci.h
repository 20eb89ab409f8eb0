/* PCI bus 0 through configuration mechanism #1 (0xCF8/0xCFC), or through
 * ECAM when the command line names one (pci.ecam=ADDR). */
#ifndef TESTGUEST_PCI_H
#define TESTGUEST_PCI_H

#include "arch.h"

#define PCI_MAX_FUNCTIONS 32

#define PCI_VENDOR_ID 0x00
#define PCI_DEVICE_ID 0x02
#define PCI_COMMAND 0x04
#define PCI_STATUS 0x06
#define PCI_REVISION 0x08
#define PCI_HEADER_TYPE 0x0E
#define PCI_BAR0 0x10
#define PCI_SUBSYS_VENDOR 0x2C
#define PCI_SUBSYS_ID 0x2E
#define PCI_CAP_PTR 0x34
#define PCI_INTERRUPT_LINE 0x3C

#define PCI_COMMAND_IO 0x1
#define PCI_COMMAND_MEMORY 0x2
#define PCI_COMMAND_MASTER 0x4
#define PCI_COMMAND_INTX_DISABLE 0x400
#define PCI_STATUS_CAP_LIST 0x10

#define PCI_CAP_ID_MSIX 0x11
#define PCI_CAP_ID_VNDR 0x09

struct pci_bar {
	u64 addr;
	u64 size;
	bool io;
	bool is64;
};

struct pci_fn {
	u8 dev, fn;
	u16 vendor, device, subsys_vendor, subsys_id;
	u8 class_code, subclass, revision;
	struct pci_bar bar[6];
	u8 msix_cap; /* 0 when absent */
};

u32 pci_read32(const struct pci_fn *f, u16 off);
u16 pci_read16(const struct pci_fn *f, u16 off);
u8 pci_read8(const struct pci_fn *f, u16 off);
void pci_write32(const struct pci_fn *f, u16 off, u32 v);
void pci_write16(const struct pci_fn *f, u16 off, u16 v);

/* Finds the functions on bus 0, sizes their memory BARs, assigns the
 * unassigned ones in 0xC000_0000-0xDFFF_FFFF, and turns on memory decoding
 * and bus mastering for the virtio ones. Returns how many were found. */
int pci_scan(struct pci_fn *out, int max);

/* Next capability at or after `from` (0: the first) with id `id`; 0 if none. */
u8 pci_find_cap(const struct pci_fn *f, u8 id, u8 from);

/* A BAR's CPU-visible address for [off, off+len); NULL (and a report line)
 * when it is not a memory BAR that holds the range. */
volatile u8 *pci_bar_map(const struct pci_fn *f, u8 bar, u32 off, u32 len);

/* MSI-X: enable with every entry masked; point `entry` at this CPU's
 * LAPIC with `vector` and unmask it. */
bool pci_msix_enable(const struct pci_fn *f);
bool pci_msix_route(const struct pci_fn *f, u16 entry, u8 vector);
u16 pci_msix_table_size(const struct pci_fn *f);

#endif

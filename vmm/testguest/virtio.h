/* virtio 1.x over PCI (the "modern" interface): capabilities, status,
 * feature negotiation, device configuration. Spec: virtio v1.2, 4.1. */
#ifndef TESTGUEST_VIRTIO_H
#define TESTGUEST_VIRTIO_H

#include "arch.h"
#include "pci.h"

#define VIRTIO_STATUS_ACKNOWLEDGE 1
#define VIRTIO_STATUS_DRIVER 2
#define VIRTIO_STATUS_DRIVER_OK 4
#define VIRTIO_STATUS_FEATURES_OK 8
#define VIRTIO_STATUS_NEEDS_RESET 64
#define VIRTIO_STATUS_FAILED 128

#define VIRTIO_F_VERSION_1 (1ull << 32)

#define VIRTIO_ID_NET 1
#define VIRTIO_ID_BLOCK 2
#define VIRTIO_ID_RNG 4

#define VIRTIO_MSI_NO_VECTOR 0xFFFF

struct virtio_dev {
	struct pci_fn *pci;
	const char *name;
	u16 type;
	volatile u8 *common;
	volatile u8 *notify;
	u32 notify_len;
	u32 notify_mult;
	volatile u8 *isr;
	volatile u8 *device;
	u32 device_len;
	u16 num_queues;
	u64 device_features;
	u64 features; /* negotiated */
};

/* The virtio device type of a PCI function (modern 0x1040+type, or
 * transitional 0x1000-0x103F with the type in the subsystem id); 0 if it
 * is not a virtio device. */
u16 virtio_pci_type(const struct pci_fn *f);

/* Finds the common, notify, ISR and device-specific structures. */
bool virtio_probe(struct virtio_dev *d, struct pci_fn *f, const char *name);

/* Reset, ACKNOWLEDGE, DRIVER, features (the device's offer masked by what
 * this driver implements; VIRTIO_F_VERSION_1 required), FEATURES_OK. */
bool virtio_negotiate(struct virtio_dev *d, u64 supported);
bool virtio_driver_ok(struct virtio_dev *d);
void virtio_reset(struct virtio_dev *d);
void virtio_set_failed(struct virtio_dev *d);
u8 virtio_status(const struct virtio_dev *d);

/* Device-specific configuration, read consistently (config_generation). */
u8 virtio_cfg8(const struct virtio_dev *d, u32 off);
u16 virtio_cfg16(const struct virtio_dev *d, u32 off);
u32 virtio_cfg32(const struct virtio_dev *d, u32 off);
u64 virtio_cfg64(const struct virtio_dev *d, u32 off);

/* Common configuration registers (struct virtio_pci_common_cfg). */
#define VIRTIO_COMMON_DFSELECT 0x00
#define VIRTIO_COMMON_DF 0x04
#define VIRTIO_COMMON_GFSELECT 0x08
#define VIRTIO_COMMON_GF 0x0C
#define VIRTIO_COMMON_MSIX 0x10
#define VIRTIO_COMMON_NUMQ 0x12
#define VIRTIO_COMMON_STATUS 0x14
#define VIRTIO_COMMON_CFGGENERATION 0x15
#define VIRTIO_COMMON_Q_SELECT 0x16
#define VIRTIO_COMMON_Q_SIZE 0x18
#define VIRTIO_COMMON_Q_MSIX 0x1A
#define VIRTIO_COMMON_Q_ENABLE 0x1C
#define VIRTIO_COMMON_Q_NOFF 0x1E
#define VIRTIO_COMMON_Q_DESCLO 0x20
#define VIRTIO_COMMON_Q_DESCHI 0x24
#define VIRTIO_COMMON_Q_AVAILLO 0x28
#define VIRTIO_COMMON_Q_AVAILHI 0x2C
#define VIRTIO_COMMON_Q_USEDLO 0x30
#define VIRTIO_COMMON_Q_USEDHI 0x34
#define VIRTIO_COMMON_LEN 0x38

#endif

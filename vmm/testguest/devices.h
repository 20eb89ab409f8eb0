/* The device tests, one per virtio device type. Each reports its own
 * lines and returns whether it passed. */
#ifndef TESTGUEST_DEVICES_H
#define TESTGUEST_DEVICES_H

#include "pci.h"

bool rng_test(struct pci_fn *f);
bool blk_test(struct pci_fn *f);
bool net_test(struct pci_fn *f);

#endif

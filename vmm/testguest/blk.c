#include "console.h"
#include "devices.h"
bool blk_test(struct pci_fn *f)
{
	(void)f;
	report("blk fail not implemented");
	return false;
}

"""Virtual machines backed up through their hypervisor: QEMU's QMP, its guest agent, disk images."""

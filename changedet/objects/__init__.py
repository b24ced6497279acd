"""Object change: railcars per track, container stacks in TEU, ships at berth."""

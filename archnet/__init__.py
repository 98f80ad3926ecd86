"""archnet: convert trained networks into quantized Arch-Nets."""

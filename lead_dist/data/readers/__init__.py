"""Source readers, one module per input format; each yields records or raises DataFormatError."""

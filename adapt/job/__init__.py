"""The run config and the end-to-end run (`shiftkit run`)."""

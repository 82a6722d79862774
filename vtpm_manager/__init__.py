"""vTPM instances, their engines, and the encrypted store that keeps their state."""

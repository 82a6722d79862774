"""Front ends that let unmodified TPM clients reach a vTPM."""

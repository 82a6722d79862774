"""DomS0: the security-domain daemon that serves every domain its vTPM."""

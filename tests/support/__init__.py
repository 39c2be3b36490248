"""Test support: the Pub/Sub emulator process, waits with deadlines."""

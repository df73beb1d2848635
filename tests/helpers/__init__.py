"""Test helpers for the data-plane tests: raw HTTP/1 client, stub backends, the daemon."""

"""Test support: loopback servers, stand-ins for what cannot run here, stack and gateway runners."""

"""The stack runtime: render supervisord's configuration and run provisioning, vLLM, the gateway and sshd."""

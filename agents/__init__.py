"""Executing tasks on hosts: the agent loop, transports and the terminator."""

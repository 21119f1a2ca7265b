"""Agent-framework integrations: each makes a framework's agents durable on any perdure backend."""

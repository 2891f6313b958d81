"""The VSS analog: volumes, providers, writers, the coordinator and the shadow sets it makes."""

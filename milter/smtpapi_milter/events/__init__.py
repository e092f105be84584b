"""Engagement events: the SparkPost-shaped model, stores and webhooks."""

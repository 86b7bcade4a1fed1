"""Writes of the CRM domain: organizations (a hierarchy), contacts and their links to projects."""

"""Seeding: plans of metatiles over an area, runs on this machine, and jobs through
SQS, all drawn through the render pipeline the service uses."""

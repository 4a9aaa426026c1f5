"""The operators' views: Grafana boards, their dashboards JSON, and the shift report.

Everything here reads the database through :mod:`storage`; nothing writes to it.
"""

"""Simulated SQAL devices: physically modelled ESP32 nodes (VL53L8CH + AS7341) with ground truth.

The physics (surface, sensors, truth) is a pure numpy core independent of ``analyzer``; the fleet
is a thin asyncio shell around it that publishes through the :mod:`sqal.wire` contract.
"""

"""Broker administration: Mosquitto password files, the ACL and certificates (``sqal mosquitto``).

The configuration files themselves live in ``mosquitto/`` at the repository's root; this
package writes the files those configurations point to.
"""

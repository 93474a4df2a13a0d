"""Routers read and switch which namespace of a pair takes traffic.

One module per router kind (Traefik IngressRoute, weighted TraefikService) behind the small
interface in `base`; `reading.read_active` combines every route of a pair.
"""

"""Acting on the cluster, one small module per job.

- `result`: `ActionResult`, the one answer of every action, and `ClusterError`.
- `context`: `Actor`, what every action needs (client, configuration, state store, Events)
  and the steps they share (read routes and readiness, write the record, refuse).
- `capacity`: production size before traffic, scale up and down, wait until Ready.
- `switch`: flip and rollback, all routes or none.
- `recovery`: a switch a dead process left half done, finished or undone all-or-none.
- `traffic`: a progressive exposure step, Traefik mirroring removed.
- `executor`: runs a lifecycle `Action` (the decision's output) through the above; the one
  way the API, the webhook, the control loop and the CLI act.
"""

"""Ray Serve deployments (ingress, RMBG-2.0 group, U2-Net group) and the app builder."""

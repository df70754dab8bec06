# rgate's image: the binary and the C runtime it links (glibc), nothing else.
#
# No base image: scripts/build-image.sh builds rgate in release, puts it and
# the shared libraries it needs into rootfs/ of a build context with this
# file, and runs `docker build` there. With access to a registry, the usual
# multi-stage build is docker/Dockerfile.multistage (see the README).
FROM scratch
COPY rootfs/ /
# The Docker socket is usually root's; rgate only reads from it.
USER 0:0
WORKDIR /etc/rgate
EXPOSE 8080 9901
STOPSIGNAL SIGTERM
# The image has no shell or curl: rgate asks its own admin plane.
HEALTHCHECK --interval=5s --timeout=3s --start-period=5s --retries=3 \
    CMD ["/usr/local/bin/rgate", "healthcheck", "--admin", "127.0.0.1:9901"]
ENTRYPOINT ["/usr/local/bin/rgate"]
CMD ["--config", "/etc/rgate/config.yml", "--admin", "127.0.0.1:9901"]

# tokenproxy: one static binary on a distroless base, run as a numeric
# non-root user, needing nothing writable at run time (it keeps everything in
# memory and logs to stderr), so it runs with a read-only root filesystem.
#
#   docker build -t tokenproxy \
#     --build-arg VERSION=$(git describe --tags --always --dirty) \
#     --build-arg COMMIT=$(git rev-parse HEAD) \
#     --build-arg DATE=$(date -u +%Y-%m-%dT%H:%M:%SZ) .
FROM golang:1.26 AS build
WORKDIR /src
COPY go.mod go.sum ./
RUN go mod download
COPY . .
ARG VERSION=devel
ARG COMMIT=unknown
ARG DATE=unknown
# CGO_ENABLED=0: no libc, so the binary runs on an image with none. The
# stamps come from the build args, not from a .git the context leaves out.
RUN CGO_ENABLED=0 go build -trimpath -buildvcs=false \
    -ldflags "-s -w -X main.version=${VERSION} -X main.commit=${COMMIT} -X main.date=${DATE}" \
    -o /tokenproxy ./cmd/tokenproxy

FROM gcr.io/distroless/static-debian12:nonroot
COPY --from=build /tokenproxy /tokenproxy
# Numeric, so that a kubelet enforcing runAsNonRoot can verify it (a user
# name cannot be checked without the image's /etc/passwd). 65532 is
# distroless's nonroot; the manifests in deploy/kubernetes use the same ids.
USER 65532:65532
ENTRYPOINT ["/tokenproxy"]
CMD ["run", "--config", "/etc/tokenproxy/config.yaml"]

# A static tokenproxy on a distroless, non-root base.
FROM golang:1.26 AS build
WORKDIR /src
COPY go.mod go.sum ./
RUN go mod download
COPY . .
ARG VERSION=devel
RUN CGO_ENABLED=0 go build -trimpath -ldflags "-s -w -X main.version=${VERSION}" -o /tokenproxy ./cmd/tokenproxy

FROM gcr.io/distroless/static-debian12:nonroot
COPY --from=build /tokenproxy /tokenproxy
USER nonroot:nonroot
ENTRYPOINT ["/tokenproxy"]
CMD ["run", "--config", "/etc/tokenproxy/config.yaml"]

/// Media types the registry understands.
public enum MediaType {
    public static let ociManifest = "application/vnd.oci.image.manifest.v1+json"
    public static let ociIndex = "application/vnd.oci.image.index.v1+json"
    public static let dockerManifest = "application/vnd.docker.distribution.manifest.v2+json"
    public static let dockerManifestList = "application/vnd.docker.distribution.manifest.list.v2+json"
    public static let dockerSchema1 = "application/vnd.docker.distribution.manifest.v1+json"
    public static let dockerSchema1Signed = "application/vnd.docker.distribution.manifest.v1+prettyjws"
    public static let ociEmpty = "application/vnd.oci.empty.v1+json"
    public static let helmConfig = "application/vnd.cncf.helm.config.v1+json"
    public static let helmChart = "application/vnd.cncf.helm.chart.content.v1.tar+gzip"

    /// Layers a client fetches from the descriptor's `urls`, not from the registry
    /// (Docker's foreign layers, OCI's deprecated non-distributable ones).
    public static func isForeignLayer(_ type: String) -> Bool {
        type == "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip"
            || type.hasPrefix("application/vnd.oci.image.layer.nondistributable.v1.tar")
    }

    public static func isIndex(_ type: String) -> Bool { type == ociIndex || type == dockerManifestList }
    public static func isImage(_ type: String) -> Bool { type == ociManifest || type == dockerManifest }
}

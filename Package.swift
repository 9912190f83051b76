// swift-tools-version:6.1
import PackageDescription

let package = Package(
    name: "Berth",
    platforms: [.macOS(.v15)],
    products: [
        .executable(name: "berth", targets: ["berth"]),
        // For Benchmarks/micro, a package of its own.
        .library(name: "BerthCore", targets: ["BerthCore"]),
        .library(name: "BerthStorage", targets: ["BerthStorage"]),
    ],
    dependencies: [
        .package(url: "https://github.com/hummingbird-project/hummingbird.git", from: "2.28.1", traits: []),
        .package(url: "https://github.com/apple/swift-nio.git", from: "2.101.2"),
        .package(url: "https://github.com/apple/swift-nio-ssl.git", from: "2.37.6"),
        .package(url: "https://github.com/apple/swift-nio-http2.git", from: "1.46.0"),
        .package(url: "https://github.com/apple/swift-nio-extras.git", from: "1.35.2"),
        .package(url: "https://github.com/apple/swift-crypto.git", from: "4.5.2"),
        .package(url: "https://github.com/apple/swift-certificates.git", from: "1.21.1"),
        .package(url: "https://github.com/apple/swift-asn1.git", from: "1.7.4"),
        .package(url: "https://github.com/apple/swift-argument-parser.git", from: "1.8.2"),
        .package(url: "https://github.com/apple/swift-log.git", from: "1.16.2"),
        .package(url: "https://github.com/swift-server/swift-service-lifecycle.git", from: "2.13.0"),
        .package(url: "https://github.com/jpsim/Yams.git", from: "6.2.2"),
        .package(url: "https://github.com/vapor/jwt-kit.git", from: "5.8.0"),
        .package(url: "https://github.com/swift-server/swift-prometheus.git", from: "2.4.1"),
        .package(url: "https://github.com/apple/swift-http-types.git", from: "1.8.0"),
    ],
    targets: [
        .systemLibrary(
            name: "CRocksDB",
            providers: [.apt(["librocksdb-dev"])]
        ),
        .target(
            name: "BerthStorage",
            dependencies: [
                "CRocksDB",
                .product(name: "Crypto", package: "swift-crypto"),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "Logging", package: "swift-log"),
            ],
            // RocksDB links statically (librocksdb-dev's archive), with the
            // compression libraries it was built with: the binary needs no
            // RocksDB package at run time, and only the RocksDB code Berth calls
            // is loaded (3.3 MiB less RSS than the shared library).
            linkerSettings: [
                .linkedLibrary(":librocksdb.a"),
                .linkedLibrary("snappy"), .linkedLibrary("lz4"), .linkedLibrary("zstd"),
                .linkedLibrary("bz2"), .linkedLibrary("z"), .linkedLibrary("stdc++"),
            ]
        ),
        .target(
            name: "BerthCore",
            dependencies: [
                "BerthStorage",
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "Crypto", package: "swift-crypto"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "JWTKit", package: "jwt-kit"),
            ]
        ),
        .target(
            name: "BerthServer",
            dependencies: [
                "BerthCore",
                .product(name: "Hummingbird", package: "hummingbird"),
                .product(name: "HummingbirdHTTP2", package: "hummingbird"),
                .product(name: "HummingbirdTLS", package: "hummingbird"),
                .product(name: "NIOSSL", package: "swift-nio-ssl"),
                .product(name: "NIOHTTP2", package: "swift-nio-http2"),
                .product(name: "NIOHTTPTypesHTTP1", package: "swift-nio-extras"),
                .product(name: "NIOHTTPTypesHTTP2", package: "swift-nio-extras"),
                .product(name: "NIOHTTP1", package: "swift-nio"),
                .product(name: "X509", package: "swift-certificates"),
                .product(name: "SwiftASN1", package: "swift-asn1"),
                .product(name: "Crypto", package: "swift-crypto"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
                .product(name: "UnixSignals", package: "swift-service-lifecycle"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "Yams", package: "Yams"),
                .product(name: "Prometheus", package: "swift-prometheus"),
            ]
        ),
        .executableTarget(
            name: "berth",
            dependencies: [
                "BerthServer",
                "BerthCore",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
            ],
            // lld packs the binary's 135,000 relative relocations into 26 KB
            // (DT_RELR, glibc 2.36) instead of 3.2 MB the loader reads at every
            // start, and without --export-dynamic the 3.6 MB dynamic symbol
            // table shrinks to the 600 symbols Berth imports: 6 MiB less RSS
            // in every phase (docs/performance.md).
            exclude: ["berth.order"],
            linkerSettings: [
                .unsafeFlags(
                    ["-use-ld=lld", "-Xlinker", "-z", "-Xlinker", "pack-relative-relocs", "-Xlinker", "--no-export-dynamic"],
                    .when(platforms: [.linux])),
                // The functions a run of every workload executes, packed together at the
                // start of .text (Benchmarks/code-layout): the pages the kernel maps
                // around each one Berth touches hold code it runs, not neighbours it never
                // calls (idle RSS 41-43 -> 33-34 MiB). SwiftPM does not see the file
                // change: delete the binary to relink after regenerating it.
                .unsafeFlags(
                    [
                        "-Xlinker", "--symbol-ordering-file=\(Context.packageDirectory)/Sources/berth/berth.order",
                        "-Xlinker", "--no-warn-symbol-ordering",
                    ],
                    .when(platforms: [.linux], configuration: .release)),
            ]
        ),
        .testTarget(name: "BerthStorageTests", dependencies: ["BerthStorage"]),
        .testTarget(
            name: "BerthCoreTests",
            dependencies: ["BerthCore", .product(name: "NIOCore", package: "swift-nio"), .product(name: "JWTKit", package: "jwt-kit")]),
        .testTarget(
            name: "BerthServerTests",
            dependencies: [
                "BerthServer", .product(name: "NIOEmbedded", package: "swift-nio"), .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "NIOHTTPTypes", package: "swift-nio-extras"), .product(name: "HTTPTypes", package: "swift-http-types"),
                .product(name: "X509", package: "swift-certificates"), .product(name: "Crypto", package: "swift-crypto"),
            ]),
    ]
)

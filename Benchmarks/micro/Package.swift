// swift-tools-version:6.1
// Microbenchmarks of Berth's hot paths (ordo-one/benchmark). A package
// of its own so that the product build and the test run never compile it:
//   cd Benchmarks/micro && swift package --allow-writing-to-package-directory benchmark
import PackageDescription

let package = Package(
    name: "BerthMicrobenchmarks",
    platforms: [.macOS(.v15)],
    dependencies: [
        .package(name: "Berth", path: "../.."),
        // MallocInterposer only: the RuntimeInterposer trait needs a package this machine has no copy of.
        .package(url: "https://github.com/ordo-one/benchmark", from: "1.38.1", traits: ["MallocInterposer"]),
        .package(url: "https://github.com/apple/swift-crypto.git", from: "4.5.2"),
        .package(url: "https://github.com/apple/swift-nio.git", from: "2.101.2"),
    ],
    targets: [
        .executableTarget(
            name: "BerthMicro",
            dependencies: [
                .product(name: "Benchmark", package: "benchmark"),
                .product(name: "BerthCore", package: "Berth"),
                .product(name: "BerthStorage", package: "Berth"),
                .product(name: "Crypto", package: "swift-crypto"),
                .product(name: "NIOCore", package: "swift-nio"),
            ],
            path: "Benchmarks/BerthMicro",
            plugins: [.plugin(name: "BenchmarkPlugin", package: "benchmark")]
        )
    ]
)

// swift-tools-version:6.0
import PackageDescription

let package = Package(
    name: "qconv",
    products: [
        .executable(name: "qconv", targets: ["qconv"]),
        .library(name: "QConvKit", targets: ["QConvKit"]),
    ],
    targets: [
        // All logic: formats, kernels, the container, verification, LoRA merging.
        .target(name: "QConvKit"),
        // The command-line front end: parses arguments, calls QConvKit, prints.
        .executableTarget(name: "qconv", dependencies: ["QConvKit"]),
        // The benchmark harness (not part of `swift test`).
        .executableTarget(name: "qconv-bench", dependencies: ["QConvKit"]),
        // Fixture paths, temporary folders and a runner for the built binary.
        .target(name: "QConvTestSupport", path: "Tests/Support"),
        .testTarget(name: "QConvKitTests", dependencies: ["QConvKit", "QConvTestSupport"]),
        .testTarget(name: "QConvCLITests", dependencies: ["qconv", "QConvKit", "QConvTestSupport"]),
    ],
    swiftLanguageModes: [.v5]
)

// swift-tools-version:6.0
import PackageDescription

// On x86-64 the library, its tests and the benchmark are compiled for Haswell-class
// CPUs (x86-64-v3: AVX2, FMA, F16C, BMI; every x86-64 server and desktop CPU made
// since about 2015): the kernels' SIMD code then runs on 256-bit registers and
// conversions take about half the time (docs/BENCHMARKS.md). `qconv` itself is
// compiled for the baseline, so that on an older CPU it can say so instead of
// crashing. `QCONV_PORTABLE=1 swift build` builds everything for the baseline
// (and is how to depend on QConvKit by version: SwiftPM refuses unsafe flags there).
#if arch(x86_64)
let portable = Context.environment["QCONV_PORTABLE"].map { !$0.isEmpty && $0 != "0" } ?? false
// QCONV_HARDWARE_HALF: F16C converts halves, and Swift has Float16 (not on macOS x86-64).
let kernelSettings: [SwiftSetting] = portable ? [] : [.unsafeFlags(["-target-cpu", "haswell"]), .define("QCONV_X86_64_V3"),
                                                      .define("QCONV_HARDWARE_HALF", .when(platforms: [.linux]))]
let frontEndSettings: [SwiftSetting] = portable ? [] : [.define("QCONV_X86_64_V3")]
// The merge's delta loop has a 512-bit twin (QConvKernels512, compiled for AVX-512 alone);
// QConvKit calls it only on CPUs that list avx512f, avx512bw, avx512cd, avx512dq and avx512vl.
let wideKernelSettings: [SwiftSetting] = portable ? [] : [.unsafeFlags(["-target-cpu", "skylake-avx512"])]
let libraryKernelSettings: [SwiftSetting] = kernelSettings + (portable ? [] : [.define("QCONV_KERNELS_512")])
#else
let kernelSettings: [SwiftSetting] = []
let frontEndSettings: [SwiftSetting] = []
let wideKernelSettings: [SwiftSetting] = []
let libraryKernelSettings: [SwiftSetting] = []
#endif

let package = Package(
    name: "qconv",
    products: [
        .executable(name: "qconv", targets: ["qconv"]),
        .library(name: "QConvKit", targets: ["QConvKit"]),
    ],
    targets: [
        // All logic: formats, kernels, the container, verification, LoRA merging.
        .target(name: "QConvKit", dependencies: ["QConvProcessor", "QConvKernels512"], swiftSettings: libraryKernelSettings),
        // The CPU's instruction-set flags, compiled for the baseline (read before any wider code runs).
        .target(name: "QConvProcessor"),
        // The 512-bit merge kernel QConvKit picks at run time (nothing else is compiled for AVX-512).
        .target(name: "QConvKernels512", swiftSettings: wideKernelSettings),
        // Typed command-line options and their parser, shared by the two executables (no QConvKit inside).
        .target(name: "QConvCommandLine"),
        // The command-line front end: parses arguments, calls QConvKit, prints.
        .executableTarget(name: "qconv", dependencies: ["QConvKit", "QConvCommandLine", "QConvProcessor"], swiftSettings: frontEndSettings),
        // The benchmark harness (not part of `swift test`).
        .executableTarget(name: "qconv-bench", dependencies: ["QConvKit", "QConvCommandLine"], swiftSettings: kernelSettings),
        // Fixture paths, temporary folders and a runner for the built binary.
        .target(name: "QConvTestSupport", dependencies: ["QConvKit"], path: "Tests/Support"),
        .testTarget(name: "QConvKitTests", dependencies: ["QConvKit", "QConvKernels512", "QConvProcessor", "QConvTestSupport"], swiftSettings: kernelSettings),
        .testTarget(name: "QConvCLITests", dependencies: ["qconv", "QConvKit", "QConvCommandLine", "QConvTestSupport"]),
    ],
    swiftLanguageModes: [.v5]
)

// Shared by every fuzz target (compiled into each; see Tests/Fuzz/run).
import Glibc
@testable import QConvKit

/// A folder of this fuzzing process for the files a target writes
/// (`QCONV_FUZZ_SCRATCH`, set by the run script to a tmpfs when there is one).
let fuzzScratch: String = {
    let base = getenv("QCONV_FUZZ_SCRATCH").map { String(cString: $0) } ?? "/tmp"
    let path = base + "/scratch-\(getpid())"
    mkdir(base, 0o755)
    mkdir(path, 0o755)
    return path
}()

/// Writes the input to `name` in the scratch folder (replacing it) and returns its path.
func writeScratch(_ name: String, _ data: UnsafePointer<UInt8>, _ size: Int) -> String {
    let path = fuzzScratch + "/" + name
    let fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0o644)
    precondition(fd >= 0, "cannot write \(path)")
    var done = 0
    while done < size {
        let n = write(fd, data + done, size - done)
        precondition(n > 0, "cannot write \(path)")
        done += n
    }
    close(fd)
    return path
}

/// Everything qconv does with a model it reads without a second input:
/// open it, `inspect --stats` (every tensor's values), for a container
/// `verify`, and for a quantized model (a container, a bitsandbytes
/// checkpoint) `dequant` (into the scratch folder, removed after).
func readModelAsEveryCommandDoes(_ path: String) {
    _ = try? Inspection.inspect(path: path, statistics: true, threads: 2)
    guard let model = try? Model.open(path), model.format.storesQuantizedTensors else { return }
    if model.format == .container, let container = try? ContainerFile(path: path) { _ = try? IntegrityCheck.check(container) }
    for output in [fuzzScratch + "/out.safetensors", fuzzScratch + "/out"] {
        _ = try? Dequantizer.dequantize(model, to: output, options: .init(maxShardSize: output.hasSuffix("out") ? 4096 : nil, threads: 2, overwrite: true))
        FileSystem.removeItem(output)
    }
}

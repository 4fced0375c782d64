// A whole container: prefix, header, layout, then every region read as the
// commands read it (inspect --stats, verify, dequant to a file and a folder).
@testable import QConvKit

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzz(_ data: UnsafePointer<UInt8>, _ size: Int) -> CInt {
    readModelAsEveryCommandDoes(writeScratch("input.qc", data, size))
    return 0
}

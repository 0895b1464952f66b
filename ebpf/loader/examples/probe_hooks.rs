fn main() {
    let obj = std::fs::read(std::env::args().nth(1).unwrap()).unwrap();
    let btf = aya::Btf::from_sys_fs().unwrap();
    for (prog, target, kind) in [("process_exit","do_exit","fentry"),("syscall_exit","x64_sys_call","fexit"),("syscall_enter","x64_sys_call","fentry"),("process_exec","sched_process_exec","tp"),("tp_btf_sys_exit","sys_exit","tp")] {
        let mut ebpf = aya::EbpfLoader::new().load(&obj).unwrap();
        let p = ebpf.program_mut(prog).unwrap();
        let r: Result<(), String> = match kind {
            "fentry" => { let p: &mut aya::programs::FEntry = p.try_into().unwrap(); p.load(target,&btf).map_err(|e| format!("load {e:?}")).and_then(|_| p.attach().map(|_|()).map_err(|e| format!("attach {e:?}"))) }
            "fexit" => { let p: &mut aya::programs::FExit = p.try_into().unwrap(); p.load(target,&btf).map_err(|e| format!("load {e:?}")).and_then(|_| p.attach().map(|_|()).map_err(|e| format!("attach {e:?}"))) }
            _ => { let p: &mut aya::programs::BtfTracePoint = p.try_into().unwrap(); p.load(target,&btf).map_err(|e| format!("load {e:?}")).and_then(|_| p.attach().map(|_|()).map_err(|e| format!("attach {e:?}"))) }
        };
        println!("{prog} on {target}: {r:?}");
    }
}

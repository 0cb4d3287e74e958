# Per (suite, method, prompt slug): train -> render -> estimate_depth, train -> extract_mesh,
# then evaluate (renders + depth + mesh). Run folder R = <results>/<suite>/runs/<method>/<slug>/.
#
# Interrupted jobs: every `hifa` step writes its files atomically and its marker JSON last
# (train_summary.json, render/render.json, depth/depth.json, mesh/mesh.json, eval/metrics.json).
# Snakemake deletes the declared outputs of a failed job and marks those of a killed one
# incomplete (the profiles set rerun-incomplete), so no half-written output is ever accepted.
# A failed step also leaves its log's last line in R/[step/]FAILED for the report.

# Shell prelude: one log per job, thread counts for torch/BLAS, the MLflow store, torch.compile's cache.
# Paths that depend on where the checkout lives ({HIFA}, {MLFLOW_DB}, {COMPILE_CACHE}) stay placeholders, filled in when the
# job runs: Snakemake's `code` re-run trigger compares the unformatted command, so moving the
# checkout does not re-run finished jobs.
MLFLOW_DB = shlex.quote(mlflow_db())
# One torch.compile cache for every job: on a cluster each node's /tmp (torch's default) would compile again.
COMPILE_CACHE = shlex.quote(compile_cache())
PRELUDE = (
    "set -euo pipefail; exec > {log:q} 2>&1; "
    # In a SLURM job the allocation decides the thread count: {threads} is capped by the driver's --cores.
    'threads=${{SLURM_CPUS_PER_TASK:-{threads}}}; '
    "export OMP_NUM_THREADS=$threads MKL_NUM_THREADS=$threads HIFA_MLFLOW_DB={MLFLOW_DB} TORCHINDUCTOR_CACHE_DIR={COMPILE_CACHE}; "
)


def failed(folder):
    """`|| ...` clause: write FOLDER/FAILED (last log line) and fail the job."""
    return ' || {{ status=$?; mkdir -p ' + folder + '; tail -n 1 {log:q} > ' + folder + '/FAILED; exit $status; }}'


rule train:
    """Optimise one asset. Pre-emption safe: the checkpoint is written atomically every
    `checkpoint_every` steps and deliberately NOT a declared output, so Snakemake never deletes it
    (not on failure, not under --rerun-incomplete, not when a SLURM time limit kills the job).
    A re-run resumes from it when its resolved config is unchanged (`hifa train --same-config
    R/config.yaml`; MLflow settings aside: switching tracking off or renaming the experiment keeps the
    trainings) and starts over when the config changed. `shadow` is not used:
    a shadow directory would lose the checkpoint with the job. To retrain from scratch with the same
    config, delete the run folder (or R/checkpoint.pt); --forcerun alone only re-finalises.
    train_log.csv is not declared either: it is rewritten at each checkpoint, and a re-run that finds
    a finished checkpoint only re-finalises (final views, summary) and would not write it again."""
    input:
        unpack(tiny_world_inputs),
    output:
        summary=RUN + "/train_summary.json",
        weights=RUN + "/weights.pt",  # what DVC versions of the training (.dvcignore leaves checkpoint.pt out)
        views=report(
            RUN + "/final_views.png",
            caption="../report/final_views.rst",
            category="Runs",
            subcategory="{method}",
            labels={"method": "{method}", "prompt": "{slug}", "figure": "final views (train)"},
        ),
    log:
        LOGS + "/train/{method}/{slug}.log",
    benchmark:
        BENCH + "/train/{method}/{slug}.tsv"
    params:
        run=run_dir,
        prompt=prompt_of,
        args=train_args,
    threads: threads_of("train")
    resources:
        gpu=resource("train", "gpu"),
        mem_mb=resource("train", "mem_mb"),
        runtime=resource("train", "runtime"),
        cpus_per_task=resource("train", "cpus"),
    conda:
        "../envs/hifa.yaml"
    shell:
        PRELUDE + """
        run={params.run:q}
        rm -f "$run/FAILED"
        resume=""
        if [ -f "$run/checkpoint.pt" ]; then
            if {HIFA} train --prompt {params.prompt:q} {params.args} --same-config "$run/config.yaml"; then
                echo "workflow: resuming from $run/checkpoint.pt"
                resume=--resume
            else
                echo "workflow: $run/checkpoint.pt was trained with another config: starting over"
                rm -rf "$run/checkpoint.pt" "$run/run.json" "$run/validation" "$run/config.yaml" "$run/mesh.glb"
            fi
        fi
        {HIFA} train --prompt {params.prompt:q} {params.args} --out "$run" $resume --quiet""" + failed('"$run"')


rule render:
    """Test-camera renders: RGB, textureless, depth, normals, opacity, turntable, contact sheet."""
    input:
        summary=RUN + "/train_summary.json",
    output:
        marker=RUN + "/render/render.json",
        depth=RUN + "/render/depth.npz",
        sheet=report(
            RUN + "/render/contact_sheet.png",
            caption="../report/contact_sheet.rst",
            category="Runs",
            subcategory="{method}",
            labels={"method": "{method}", "prompt": "{slug}", "figure": "renders"},
        ),
    log:
        LOGS + "/render/{method}/{slug}.log",
    params:
        run=run_dir,
        options=lambda wc: option_args(
            suite_of(wc)["render"],
            {"views": "--views", "resolution": "--resolution", "elevation": "--elevation", "radius": "--radius", "fovy": "--fovy",
             "chunk_rays": "--chunk-rays"},
        ),
    threads: threads_of("render")
    resources:
        gpu=resource("render", "gpu"),
        mem_mb=resource("render", "mem_mb"),
        runtime=resource("render", "runtime"),
        cpus_per_task=resource("render", "cpus"),
    conda:
        "../envs/hifa.yaml"
    shell:
        PRELUDE + "rm -f {params.run:q}/render/FAILED; {HIFA} render {params.run:q} {params.options} --quiet" + failed("{params.run:q}/render")


rule estimate_depth:
    """The run's monocular depth estimator on the rendered views, and its consistency with the field."""
    input:
        marker=RUN + "/render/render.json",
    output:
        marker=RUN + "/depth/depth.json",
        arrays=RUN + "/depth/estimated.npz",
        comparison=RUN + "/depth/comparison.png",
    log:
        LOGS + "/depth/{method}/{slug}.log",
    params:
        run=run_dir,
        options=lambda wc: option_args(suite_of(wc)["depth"], {"batch": "--batch"}),
    threads: threads_of("depth")
    resources:
        gpu=resource("depth", "gpu"),
        mem_mb=resource("depth", "mem_mb"),
        runtime=resource("depth", "runtime"),
        cpus_per_task=resource("depth", "cpus"),
    conda:
        "../envs/hifa.yaml"
    shell:
        PRELUDE + "rm -f {params.run:q}/depth/FAILED; {HIFA} depth {params.run:q} {params.options} --quiet" + failed("{params.run:q}/depth")


rule extract_mesh:
    """Marching cubes on the trained density: .ply/.obj/.glb, a UV-textured .glb/.obj and a shaded preview."""
    input:
        summary=RUN + "/train_summary.json",
    output:
        marker=RUN + "/mesh/mesh.json",
        ply=RUN + "/mesh/mesh.ply",
        obj=RUN + "/mesh/mesh.obj",
        glb=RUN + "/mesh/mesh.glb",
        textured=multiext(RUN + "/mesh/textured", ".glb", ".obj", ".mtl", ".png"),
        preview=report(
            RUN + "/mesh/preview.png",
            caption="../report/mesh_preview.rst",
            category="Runs",
            subcategory="{method}",
            labels={"method": "{method}", "prompt": "{slug}", "figure": "mesh"},
        ),
    log:
        LOGS + "/mesh/{method}/{slug}.log",
    params:
        run=run_dir,
        options=lambda wc: option_args(
            suite_of(wc)["mesh"],
            {"resolution": "--resolution", "preview_resolution": "--preview-resolution", "texture_size": "--texture-size", "atlas": "--atlas",
             "threshold": "--threshold"},
        ),
    threads: threads_of("mesh")
    resources:
        gpu=resource("mesh", "gpu"),
        mem_mb=resource("mesh", "mem_mb"),
        runtime=resource("mesh", "runtime"),
        cpus_per_task=resource("mesh", "cpus"),
    conda:
        "../envs/hifa.yaml"
    shell:
        PRELUDE + "rm -f {params.run:q}/mesh/FAILED; {HIFA} mesh {params.run:q} {params.options}" + failed("{params.run:q}/mesh")


rule evaluate:
    """CLIP score / R-precision (suite prompts join the caption set) and, in the oracle world,
    PSNR/SSIM/depth/Chamfer/F-score against ground truth; logged to the run's MLflow run."""
    input:
        render=RUN + "/render/render.json",
        depth=RUN + "/depth/depth.json",
        mesh=RUN + "/mesh/mesh.json",
        prompts=RESULTS + "/{suite}/prompts.txt",
    output:
        metrics=RUN + "/eval/metrics.json",
    log:
        LOGS + "/evaluate/{method}/{slug}.log",
    params:
        run=run_dir,
        options=lambda wc: option_args(
            suite_of(wc)["evaluate"],
            {"clip_models": "--clip-models", "captions": "--captions", "surface_points": "--surface-points"},
        ),
    threads: threads_of("evaluate")
    resources:
        gpu=resource("evaluate", "gpu"),
        mem_mb=resource("evaluate", "mem_mb"),
        runtime=resource("evaluate", "runtime"),
        cpus_per_task=resource("evaluate", "cpus"),
    conda:
        "../envs/hifa.yaml"
    shell:
        PRELUDE + "rm -f {params.run:q}/eval/FAILED; {HIFA} evaluate {params.run:q} {params.options} --prompts {input.prompts:q} --quiet" + failed("{params.run:q}/eval")

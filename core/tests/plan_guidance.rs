use fewstep_core::guidance::{guide, guide_in_place};
use fewstep_core::{PlanError, SamplerChoice, SamplerKind, SamplingPlan, StudentSteps};

#[test]
fn multistep_plan_walks_t_uniform_segments() {
    let plan = SamplingPlan::multistep_consistency(4).unwrap();
    let steps: Vec<(f64, f64)> = plan.iter().map(|s| (s.t, s.s)).collect();
    assert_eq!(
        steps,
        vec![(1.0, 0.75), (0.75, 0.5), (0.5, 0.25), (0.25, 0.0)]
    );
    assert_eq!(plan.sampler(), SamplerKind::Ddim);
    assert_eq!(plan.iter().len(), 4);
    assert_eq!(
        plan.iter().map(|s| s.index).collect::<Vec<_>>(),
        vec![0, 1, 2, 3]
    );
}

#[test]
fn n_step_plan_ends_at_zero_exactly() {
    for n in [1, 3, 7, 512] {
        let plan = SamplingPlan::new(n, SamplerKind::Addim).unwrap();
        let v: Vec<_> = plan.iter().collect();
        assert_eq!(v.len(), n as usize);
        assert_eq!(v[0].t, 1.0);
        assert_eq!(v[v.len() - 1].s, 0.0);
        for w in v.windows(2) {
            assert_eq!(w[0].s, w[1].t, "steps chain");
        }
    }
    assert_eq!(
        SamplingPlan::new(0, SamplerKind::Ddim),
        Err(PlanError::ZeroSteps)
    );
}

#[test]
fn resolve_applies_the_models_rules() {
    let cm = StudentSteps(4);
    let p = SamplingPlan::resolve(cm, None, SamplerChoice::Auto, 64).unwrap();
    assert_eq!((p.steps(), p.sampler()), (4, SamplerKind::Ddim));
    let err = SamplingPlan::resolve(cm, Some(8), SamplerChoice::Auto, 64).unwrap_err();
    assert_eq!(
        err,
        PlanError::StepsNotTrained {
            requested: 8,
            trained: 4
        }
    );
    assert!(format!("{err}").contains("trained for 4 steps"));
    assert_eq!(
        SamplingPlan::resolve(cm, Some(0), SamplerChoice::Auto, 64),
        Err(PlanError::ZeroSteps)
    );

    let diff = StudentSteps::DIFFUSION;
    let p = SamplingPlan::resolve(diff, None, SamplerChoice::Auto, 64).unwrap();
    assert_eq!((p.steps(), p.sampler()), (64, SamplerKind::Addim));
    let p = SamplingPlan::resolve(diff, Some(8), SamplerChoice::Ddim, 64).unwrap();
    assert_eq!((p.steps(), p.sampler()), (8, SamplerKind::Ddim));
    assert_eq!(
        SamplingPlan::resolve(diff, Some(0), SamplerChoice::Addim, 64),
        Err(PlanError::ZeroSteps)
    );
    assert_eq!("addim".parse::<SamplerChoice>(), Ok(SamplerChoice::Addim));
    assert_eq!(
        "euler".parse::<SamplerChoice>(),
        Err(PlanError::UnknownSampler)
    );
}

#[test]
fn guidance_follows_diffusers_convention() {
    assert_eq!(guide(3.0, 1.0, 1.0), 3.0, "w = 1 is the conditional output");
    assert_eq!(
        guide(3.0, 1.0, 0.0),
        1.0,
        "w = 0 is the unconditional output"
    );
    assert_eq!(guide(3.0, 1.0, 2.0), 5.0);
    let mut cond = [1.0, 2.0];
    guide_in_place(&mut cond, &[0.0, 0.0], 1.5).unwrap();
    assert_eq!(cond, [1.5, 3.0]);
    assert!(guide_in_place(&mut cond, &[0.0], 1.5).is_err());
}
